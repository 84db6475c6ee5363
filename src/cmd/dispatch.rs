//! Runs commands through their lifecycle, whoever delivered them: the fleet link (every step
//! published on `P/cmd/res` through the durable outbox) or the local control socket (every
//! step sent back on that connection only, never published). One admission path for both:
//! the same parsing, validation, ledger (an id is never run twice) and metrics.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::alerts::Input as AlertInput;
use crate::fleet::{Announcer, CommandTopic};
use crate::gpio::PressSink;
use crate::metrics::Metrics;
use crate::pipeline::control::FacesHandle;
use crate::settings::Settings;
use crate::shutdown::{Shutdown, Stopper};
use crate::status::View;
use crate::store::Store;
use doorbell_base::logging::Recent;
use doorbell_slotctl::ctl::Requests;
use doorbell_slotctl::{Layout, State};

use super::{auth, update, Command, Ledger, Progress, Request, Response, Status};

/// Commands executed at the same time; more wait for a slot.
const CONCURRENT: usize = 4;
/// Lifecycle steps a local caller may have unread; a request has at most four.
pub const LOCAL_STEPS: usize = 8;

/// A request as it arrives, before parsing.
#[derive(Debug)]
pub struct Inbound {
    /// Who sent it, and so where its answers go.
    pub origin: Origin,
    /// The raw payload (MQTT) or line (local socket).
    pub payload: Vec<u8>,
}

/// Where a request came from. Decides how it is parsed, whether it must be signed, how large
/// its answers may be, and where they go.
#[derive(Debug)]
pub enum Origin {
    /// `P/cmd/{name}` over MQTT: `{id, ...args}`, answered on `P/cmd/res` through the outbox;
    /// commands must be signed when `mqtt.command_key` is set (`Command::needs_signature`).
    Fleet(CommandTopic),
    /// A line on the local control socket: `{id, name, args}`, answered on that connection
    /// only (capacity `LOCAL_STEPS`). Authorised by the socket's file permissions, so no
    /// signature is asked for.
    Local(mpsc::Sender<serde_json::Value>),
}

impl Origin {
    fn is_fleet(&self) -> bool {
        matches!(self, Origin::Fleet(_))
    }
}

/// What commands act on.
pub struct Context {
    /// Status sources.
    pub view: View,
    /// The alert engine (ack, clear).
    pub alerts: mpsc::Sender<AlertInput>,
    /// Presses the button (test ring).
    pub press: PressSink,
    /// Recent log lines.
    pub logs: Recent,
    /// The live configuration.
    pub settings: Settings,
    /// Asks `main` to stop the agent (restart).
    pub stop: Stopper,
    /// The face gallery and feedback (the pipeline owner's control API).
    pub faces: FacesHandle,
    /// Held by a running `update` or `rollback`: one at a time.
    pub update_lock: Arc<Mutex<()>>,
}

/// Parses, authorises, de-duplicates and runs commands.
pub struct Dispatcher {
    /// What commands act on.
    pub ctx: Context,
    /// Where responses are queued.
    pub store: Store,
    /// Outcomes by id.
    pub ledger: Ledger,
    /// Builds the `P/cmd/res` messages; absent without a fleet link (local requests only).
    pub announce: Option<Announcer>,
    /// Largest MQTT request, and largest MQTT answer (`mqtt.max_command_bytes`, always below
    /// the link's packet limit): a bigger answer could not be sent back to the device either,
    /// and would crowd the outbox that rings and alerts wait in.
    pub max_bytes: usize,
    /// Largest local answer (`control.max_request_mib`: what the socket accepts as a request,
    /// so an exported gallery can always be imported again).
    pub max_local_bytes: usize,
    /// Fleet key that MQTT commands must be signed with (`Command::needs_signature`).
    pub key: Option<VerifyingKey>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// A command of a previous run still waiting for its answer: id, name, from the local socket.
type Unfinished = (String, String, bool);

/// What screening a request decided.
enum Verdict {
    /// Refused or failed: recorded and answered.
    Answer(Response),
    /// A repeated id: answered with its stored outcome.
    Repeat(serde_json::Value),
    /// Accepted: recorded, answered and run.
    Admit { command: Command, id: String, name: String },
}

/// A request that passed admission.
struct Admitted {
    command: Command,
    id: String,
    name: String,
    origin: Origin,
}

impl Dispatcher {
    /// Handles commands until shutdown; first settles commands a previous run left unfinished,
    /// and answers those still waiting for an update outcome as soon as the slot state has it.
    pub async fn run(self, mut inbound: mpsc::Receiver<Inbound>, mut shutdown: Shutdown) {
        let this = Arc::new(self);
        let mut waiting = this.settle_interrupted().await;
        let mut updates = this.ctx.view.update.clone();
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        loop {
            let message = tokio::select! {
                _ = shutdown.recv() => break,
                changed = updates.changed(), if !waiting.is_empty() => {
                    let state = match changed {
                        Ok(()) => updates.borrow_and_update().state.clone(),
                        // The update task is gone (shutting down): the next run settles them.
                        Err(_) => {
                            waiting.clear();
                            continue;
                        }
                    };
                    waiting = this.settle_waiting(waiting, state.as_ref()).await;
                    continue;
                }
                message = inbound.recv() => match message {
                    Some(m) => m,
                    None => break,
                },
            };
            // Admission runs here, one command at a time, and records `accepted` before the
            // next command is looked at: an id can never be admitted twice.
            let Some(admitted) = this.admit(message).await else { continue };
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let this = this.clone();
            tokio::spawn(async move {
                this.execute(admitted).await;
                drop(slot);
            });
        }
    }

    /// Admits a request: screened on the blocking pool, since parsing (JSON, the base64 of an
    /// enrolled photo, up to the request limit) and checking a signature can take a Pi's core
    /// for a few hundred ms, and this runtime has one thread. Records and answers the verdict.
    async fn admit(self: &Arc<Self>, inbound: Inbound) -> Option<Admitted> {
        let this = self.clone();
        let screened = tokio::task::spawn_blocking(move || {
            let verdict = this.screen(&inbound.origin, &inbound.payload);
            (inbound.origin, verdict)
        });
        let (origin, verdict) = match screened.await {
            Ok(screened) => screened,
            Err(e) => {
                log::error!("a command could not be screened: {e}");
                return None;
            }
        };
        match verdict {
            Verdict::Answer(response) => self.step(&origin, response).await,
            Verdict::Repeat(answer) => {
                self.metrics.commands.inc(&["repeated"]);
                self.deliver(&origin, answer).await;
            }
            Verdict::Admit { command, id, name } => {
                log::info!("command {name} id={id} accepted{}", if origin.is_fleet() { "" } else { " (local)" });
                self.step(&origin, Response::new(&id, &name, Status::Accepted)).await;
                return Some(Admitted { command, id, name, origin });
            }
        }
        None
    }

    /// Parses, de-duplicates and authorises a request.
    fn screen(&self, origin: &Origin, payload: &[u8]) -> Verdict {
        let parsed = match origin {
            Origin::Fleet(topic) => Request::parse(&topic.name, topic.broadcast, payload, self.max_bytes),
            Origin::Local(_) => Request::parse_local(payload),
        };
        let request = match parsed {
            Ok(request) => request,
            Err(reason) => {
                // An id inside a refused payload is still remembered, so a repeat gets the same answer.
                let response = match origin {
                    Origin::Fleet(topic) => Response::rejected(&topic.name, payload, reason),
                    Origin::Local(_) => Response::rejected_local(payload, reason),
                };
                log::warn!("command {} refused: {}", response.name, response.reason.as_deref().unwrap_or_default());
                return Verdict::Answer(response);
            }
        };
        if let Some(entry) = self.ledger.get(&request.id) {
            log::info!("command {} id={} repeated: answering with its stored outcome", entry.name, request.id);
            return Verdict::Repeat(entry.response);
        }
        let (id, name) = (request.id.clone(), request.name.clone());
        let command = match Command::parse(&request) {
            Ok(command) => command,
            Err(reason) => return Verdict::Answer(Response::failed(&id, &name, reason)),
        };
        if let (true, true, Some(key)) = (origin.is_fleet(), command.needs_signature(), &self.key) {
            if let Err(reason) = auth::verify(key, &request, &self.ctx.view.info.device_id, doorbell_base::time::now_ms()) {
                self.metrics.security_events.inc(&["command_not_authorised"]);
                return Verdict::Answer(Response::failed(&id, &name, reason));
            }
        }
        Verdict::Admit { command, id, name }
    }

    async fn execute(&self, Admitted { command, id, name, origin }: Admitted) {
        self.step(&origin, Response::new(&id, &name, Status::Executing)).await;
        let restarts = command.finishes_after_restart();
        let (progress, mut reports) = mpsc::channel(8);
        let run = command.apply(&self.ctx, Progress(progress));
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(fraction) = reports.recv() => self.progress(&origin, &id, &name, fraction).await,
            }
        };
        while let Ok(fraction) = reports.try_recv() {
            self.progress(&origin, &id, &name, fraction).await;
        }
        if restarts && outcome.is_ok() {
            // Reported by the next run, once the agent is back (settle_interrupted).
            return;
        }
        let mut response = match outcome {
            Ok(result) => Response { result: Some(result), ..Response::new(&id, &name, Status::Successful) },
            Err(reason) => Response::failed(&id, &name, reason),
        };
        let (limit, what) = match origin {
            Origin::Fleet(_) => (
                self.max_bytes,
                "an MQTT answer may carry (mqtt.max_command_bytes); run the command on the device (`doorbell-agent faces …`)",
            ),
            Origin::Local(_) => (self.max_local_bytes, "a local answer may carry (control.max_request_mib)"),
        };
        let size = response.to_json().to_string().len();
        if size > limit {
            response = Response::failed(&id, &name, format!("too large: the answer is {size} bytes, more than the {limit} bytes {what}"));
        }
        self.step(&origin, response).await;
    }

    async fn progress(&self, origin: &Origin, id: &str, name: &str, fraction: f64) {
        self.step(origin, Response { progress: Some(fraction), ..Response::new(id, name, Status::Executing) }).await;
    }

    /// Records a step in the ledger (when it has an id) and answers it.
    async fn step(&self, origin: &Origin, response: Response) {
        let status = response.status.as_str();
        self.metrics.commands.inc(&[status]);
        match &response.reason {
            Some(reason) => log::info!("command {} id={} {status}: {reason}", response.name, response.id.as_deref().unwrap_or("-")),
            None => log::debug!("command {} id={} {status}", response.name, response.id.as_deref().unwrap_or("-")),
        }
        let ledger = self.ledger.clone();
        let recorded = response.clone();
        let local = !origin.is_fleet();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.record(&recorded, local)).await {
            log::error!("command {}: cannot record its outcome: {e}", response.name);
        }
        self.deliver(origin, response.to_json()).await;
    }

    /// Sends an answer where the request came from.
    async fn deliver(&self, origin: &Origin, payload: serde_json::Value) {
        match origin {
            Origin::Fleet(_) => self.publish(payload).await,
            // Never waits: a local caller that stopped reading (or hung up) loses its answers,
            // and the command goes on; admission of other requests must not stall on it.
            Origin::Local(reply) => {
                if reply.try_send(payload).is_err() {
                    log::debug!("a local caller is gone or not reading; an answer was dropped");
                }
            }
        }
    }

    async fn publish(&self, payload: serde_json::Value) {
        let Some(announce) = &self.announce else {
            log::error!("a fleet command answer without a fleet link: dropped");
            return;
        };
        let message = announce.response(&payload);
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.outbox_push(&[message])).await {
            log::error!("cannot queue a command response: {e}");
        }
    }

    /// Commands accepted by a previous run that never finished: a `restart` has done its job
    /// now; an `update` or `rollback` is answered from the slot state once its outcome is
    /// there (the ones still waiting are returned); anything else was cut short.
    async fn settle_interrupted(&self) -> Vec<Unfinished> {
        let ledger = self.ledger.clone();
        let unfinished = tokio::task::spawn_blocking(move || ledger.unfinished()).await.unwrap_or_default();
        // Read here rather than from the update view, which the update task fills only once
        // it runs; slotctl pre-start has decided what it could before this process started.
        let state = State::load(&Layout::from_config(&self.ctx.settings.current().update).state_file()).ok();
        let (updates, others): (Vec<_>, Vec<_>) =
            unfinished.into_iter().partition(|(_, name, _)| matches!(name.as_str(), "update" | "rollback"));
        let waiting = self.settle_waiting(updates, state.as_ref()).await;
        for (id, name, local) in &waiting {
            log::info!("command {name} id={id}: waiting for the outcome of its trial");
            let step = Response { progress: Some(update::ON_TRIAL), ..Response::new(id, name, Status::Executing) };
            self.answer_late(*local, step).await;
        }
        for (id, name, local) in others {
            let response = if name == "restart" {
                let info = &self.ctx.view.info;
                let result = serde_json::json!({
                    "version": crate::VERSION,
                    "boot_id": info.boot_id,
                    "started_at": doorbell_base::time::rfc3339(info.started_ms),
                });
                Response { result: Some(result), ..Response::new(&id, &name, Status::Successful) }
            } else {
                Response::failed(&id, &name, "interrupted: the agent stopped before the command finished")
            };
            self.answer_late(local, response).await;
        }
        waiting
    }

    /// Answers the `update`/`rollback` commands whose outcome `state` records; returns the rest.
    async fn settle_waiting(&self, waiting: Vec<Unfinished>, state: Option<&State>) -> Vec<Unfinished> {
        let requests = Requests::new(&self.ctx.settings.current().data_dir);
        let mut still = Vec::new();
        for (id, name, local) in waiting {
            match update::settle(&id, &name, state, &requests) {
                Some(response) => self.answer_late(local, response).await,
                None => still.push((id, name, local)),
            }
        }
        still
    }

    /// Answers a command of a previous run: published for the fleet; for a local caller, who
    /// left with that run, kept in the ledger for a repeat of its id.
    async fn answer_late(&self, local: bool, response: Response) {
        if local {
            let ledger = self.ledger.clone();
            let name = response.name.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ledger.record(&response, true)).await {
                log::error!("command {name}: cannot record its outcome: {e}");
            }
        } else {
            let topic = CommandTopic { name: response.name.clone(), broadcast: false };
            self.step(&Origin::Fleet(topic), response).await;
        }
    }
}
