//! Face recognition as the agent runs it: the owner of the gallery, the feedback window,
//! the snapshots and the pipeline worker. It implements `pipeline::Recognizer`, so the ring
//! thread calls it for every ring and hands it every control request.
//!
//! The agent process never loads a model: the worker (see `worker`) captures and embeds,
//! this module matches, votes, stores and reports. Matching is a few hundred multiply-adds
//! per person, well within the agent's budget.

pub mod feedback;
pub mod gallery;
pub mod matcher;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::alerts::Input as AlertInput;
use crate::config::{Config, Severity};
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::pipeline::control::{Control, ControlError, EnrollFrom, Exported, List, Person};
use crate::pipeline::{Decision, Recognizer, RingCtx, Stage, StageTimer};
use crate::snapshots::Snapshots;
use crate::store::{RingResult, Store};
use crate::worker::protocol::{Reply, Request};
use crate::worker::supervisor::{Supervisor, WorkerError, WorkerState};
use feedback::Feedback;
use gallery::Gallery;
use matcher::Thresholds;

/// Descriptor length of the embedder.
pub const DIMS: usize = 128;
/// Images one enrollment may carry.
pub const MAX_ENROLL_IMAGES: usize = 10;
/// Feedbacks needed before the accuracy feeds the alert rule.
pub const MIN_FEEDBACK: usize = 10;
/// Alert key raised while the models cannot be used.
pub const MODELS_ALERT: &str = "face_models_unavailable";
/// The store tree of the gallery and the accuracy feedback.
const TREE: &str = "faces";

/// The embedder id the gallery is tied to: model name plus the start of its sha256.
pub fn embedder_id(cfg: &Config) -> String {
    format!("dlib_face_recognition_resnet_v1/{}", &cfg.faces.embedder_sha256[..16.min(cfg.faces.embedder_sha256.len())])
}

/// Everything the recognizer needs from the agent.
pub struct Parts {
    /// The store (the `faces` tree is opened from it).
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health board (`pipeline` check).
    pub health: Board,
    /// Alert engine input.
    pub alerts: mpsc::Sender<AlertInput>,
    /// How to start the worker: program and arguments.
    pub worker: (PathBuf, Vec<OsString>),
}

/// The face recognizer of the running agent.
pub struct Recognition {
    worker: Supervisor,
    gallery: Gallery,
    feedback: Feedback,
    snapshots: Option<Snapshots>,
    thresholds: Thresholds,
    deadline: Duration,
    device_id: String,
    metrics: Arc<Metrics>,
    health: Board,
    alerts: mpsc::Sender<AlertInput>,
    reported: Option<(bool, String)>,
    models_alert: bool,
}

impl Recognition {
    /// Opens the gallery and feedback from the store; the worker starts on first use (or
    /// at the first housekeeping when it is kept warm).
    pub fn new(cfg: &Config, parts: Parts) -> Result<Recognition, crate::store::StoreError> {
        let tree = match parts.store.tree(TREE) {
            Ok(tree) => Some(tree),
            Err(e @ crate::store::StoreError::NotOpen) => {
                log::error!("the face gallery cannot be read ({e}): everyone is unknown until the store opens and the agent restarts");
                None
            }
            Err(e) => return Err(e),
        };
        let (gallery, foreign) = Gallery::open(
            parts.store.clone(),
            tree.as_ref(),
            embedder_id(cfg),
            DIMS,
            cfg.faces.max_samples_per_person,
            cfg.faces.max_people,
        );
        if foreign > 0 {
            log::warn!("{foreign} enrolled people were made with another embedder and are not matched; re-enroll them");
        }
        let feedback = Feedback::open(parts.store.clone(), tree.as_ref(), cfg.faces.accuracy_window);
        let (program, args) = parts.worker;
        let recognition = Recognition {
            worker: Supervisor::new(program, args, cfg.pipeline.clone(), parts.metrics.clone()),
            gallery,
            feedback,
            snapshots: Snapshots::new(&cfg.snapshots, &cfg.data_dir),
            thresholds: Thresholds { known: cfg.faces.match_threshold, blocked: cfg.faces.block_threshold },
            deadline: cfg.pipeline.ring_deadline,
            device_id: cfg.device_id(),
            metrics: parts.metrics,
            health: parts.health,
            alerts: parts.alerts,
            reported: None,
            models_alert: false,
        };
        recognition.gallery_gauges();
        recognition.accuracy_gauge();
        Ok(recognition)
    }

    /// Publishes the worker's state to the health board, metrics and alert readings when it
    /// changes; raises or clears the models alert.
    fn report_worker(&mut self) {
        let state = self.worker.state();
        let (ok, detail) = match &state {
            WorkerState::Up => (true, "worker up, models loaded".to_string()),
            WorkerState::Idle => (true, "worker idle (starts on the next ring)".to_string()),
            WorkerState::Failed(e) => (false, e.to_string()),
        };
        if let WorkerState::Failed(WorkerError::Unavailable(reason)) = &state {
            if !self.models_alert {
                self.models_alert = true;
                let message = format!("face models unavailable, rings are `error`: {reason}");
                let _ = self.alerts.blocking_send(AlertInput::Event { key: MODELS_ALERT, severity: Severity::Major, message });
            }
        } else if self.models_alert && state == WorkerState::Up {
            self.models_alert = false;
            // The condition is gone: clear the event as the system, not as an operator.
            let (tx, _) = oneshot::channel();
            let _ = self.alerts.blocking_send(AlertInput::Clear(MODELS_ALERT.into(), tx));
        }
        if self.reported.as_ref() != Some(&(ok, detail.clone())) {
            self.health.set("pipeline", Importance::Required, ok, detail.clone());
            self.metrics.worker_health.set(&[], f64::from(u8::from(ok)));
            let _ = self.alerts.blocking_send(AlertInput::Readings(vec![("pipeline_worker_up", f64::from(u8::from(ok)))]));
            self.reported = Some((ok, detail));
        }
    }

    fn gallery_gauges(&self) {
        for list in [List::Known, List::Blocked] {
            self.metrics.gallery_size.set(&[list.as_str()], self.gallery.size(list) as f64);
        }
    }

    fn accuracy_gauge(&self) {
        let a = self.feedback.accuracy();
        if let (Some(acc), true) = (a.accuracy, a.samples >= MIN_FEEDBACK) {
            self.metrics.face_accuracy.set(&[], acc);
            let _ = self.alerts.try_send(AlertInput::Readings(vec![("face_recognition_accuracy", acc)]));
        }
    }

    /// The descriptor of the largest face in each image (enrollment).
    fn descriptors(&mut self, images: Vec<Vec<u8>>) -> Result<Vec<Vec<f32>>, ControlError> {
        if images.is_empty() || images.len() > MAX_ENROLL_IMAGES {
            return Err(ControlError::BadRequest(format!("give 1 to {MAX_ENROLL_IMAGES} images, not {}", images.len())));
        }
        let mut out = Vec::new();
        for (i, jpeg) in images.into_iter().enumerate() {
            let reply = self.worker.request(&Request::Embed { jpeg }, self.deadline);
            self.report_worker();
            let report = match reply {
                Ok(Reply::Embedded(Ok(r))) => r,
                Ok(Reply::Embedded(Err(e))) => return Err(ControlError::BadRequest(format!("image {}: {e}", i + 1))),
                Ok(other) => return Err(ControlError::Unavailable(format!("pipeline worker answered {other:?}"))),
                Err(e) => return Err(ControlError::Unavailable(e.to_string())),
            };
            let face = report.faces.into_iter().max_by(|a, b| a.area.total_cmp(&b.area)).ok_or_else(|| {
                ControlError::BadRequest(format!(
                    "image {}: no usable face (detector found {}, {} too blurred)",
                    i + 1,
                    report.detected,
                    report.blurred
                ))
            })?;
            out.push(face.embedding);
        }
        Ok(out)
    }

    fn enroll(&mut self, name: &str, list: List, from: EnrollFrom) -> Result<Person, ControlError> {
        gallery::validate_name(name)?;
        let images = match from {
            EnrollFrom::Jpegs(j) => j,
            EnrollFrom::Ring(id) => {
                let snapshots = self
                    .snapshots
                    .as_ref()
                    .ok_or_else(|| ControlError::NotFound("no ring frames are kept (snapshots.keep = false)".into()))?;
                let frames = snapshots.frames_of(&id).map_err(|e| ControlError::Store(format!("reading snapshots: {e}")))?;
                if frames.is_empty() {
                    return Err(ControlError::NotFound(format!(
                        "no kept frames for ring {id:?} (only unknown/blocked rings are kept, and old ones are pruned)"
                    )));
                }
                frames
            }
        };
        let mut person = None;
        for d in self.descriptors(images)? {
            person = Some(self.gallery.enroll(name, list, d)?);
        }
        self.gallery_gauges();
        let person = person.ok_or_else(|| ControlError::BadRequest("no image".into()))?;
        log::info!("enrolled {name:?} on the {} list ({} samples)", list.as_str(), person.samples);
        Ok(person)
    }
}

impl Recognizer for Recognition {
    fn recognize(&mut self, ring: &RingCtx, timer: &mut StageTimer) -> Result<Decision, String> {
        let reply = self.worker.request(&Request::Ring { seq: ring.seq, keep_frames: self.snapshots.is_some() }, self.deadline);
        self.report_worker();
        let burst = match reply.map_err(|e| e.to_string())? {
            Reply::Ring(burst) => burst?,
            other => return Err(format!("pipeline worker answered {other:?} to a ring")),
        };
        let t = burst.times;
        for (stage, ms) in [
            (Stage::Capture, t.capture_ms),
            (Stage::Decode, t.decode_ms),
            (Stage::Detect, t.detect_ms),
            (Stage::Align, t.align_ms),
            (Stage::Embed, t.embed_ms),
        ] {
            timer.add(stage, ms);
        }
        let mut errors = Vec::new();
        for frame in &burst.frames {
            match &frame.error {
                Some(e) => {
                    self.metrics.errors.inc(&["pipeline", "frame"]);
                    errors.push(e.as_str());
                }
                None => self.metrics.frame_faces.inc(&[faces_label(frame.faces.len())]),
            }
        }
        if errors.len() == burst.frames.len() {
            let more = if errors.len() > 1 { format!(" (and {} more failed frames)", errors.len() - 1) } else { String::new() };
            return Err(format!("{}{more}", errors.first().unwrap_or(&"no frames captured")));
        }
        let decision = timer.time(Stage::Match, || {
            let people = self.gallery.candidates();
            let verdicts: Vec<_> = burst
                .frames
                .iter()
                .flat_map(|f| &f.faces)
                .map(|f| (f, matcher::classify(&f.embedding, &people, self.thresholds)))
                .collect();
            matcher::vote(&verdicts)
        });
        let decision = decision.unwrap_or(Decision { result: RingResult::NoFace, name: None, confidence: None });
        self.metrics.face_decisions.inc(&[decision.result.as_str(), confidence_bucket(decision.confidence)]);
        if let (Some(snapshots), RingResult::Unknown | RingResult::Blocked) = (&self.snapshots, decision.result) {
            match snapshots.keep(&ring.id, doorbell_base::time::now_ms(), &burst.kept) {
                Ok((rings, bytes)) => {
                    self.metrics.snapshots.set(&["rings"], rings as f64);
                    self.metrics.snapshots.set(&["bytes"], bytes as f64);
                }
                Err(e) => {
                    self.metrics.errors.inc(&["pipeline", "snapshot_write"]);
                    log::error!("ring {}: cannot keep its frames: {e}", ring.seq);
                }
            }
        }
        Ok(decision)
    }

    fn control(&mut self, request: Control) {
        let started = Instant::now();
        // A caller that gave up waiting has dropped its reply channel: nothing to tell.
        match request {
            Control::Enroll { name, list, from, reply } => drop(reply.send(self.enroll(&name, list, from))),
            Control::Remove { name, reply } => {
                let r = self.gallery.remove(&name);
                self.gallery_gauges();
                drop(reply.send(r));
            }
            Control::List { reply } => drop(reply.send(Ok(self.gallery.list()))),
            Control::Feedback { ring_id, correct, reply } => {
                let r = self.feedback.record(&ring_id, correct);
                self.accuracy_gauge();
                drop(reply.send(r));
            }
            Control::Export { reply } => {
                let people = self.gallery.list().len();
                drop(reply.send(Ok(Exported { file: self.gallery.export(&self.device_id), people })));
            }
            Control::Import { bytes, reply } => {
                let r = self.gallery.import(&bytes);
                self.gallery_gauges();
                drop(reply.send(r));
            }
        }
        log::debug!("control request served in {} ms", started.elapsed().as_millis());
    }

    fn housekeeping(&mut self) -> Duration {
        let next = self.worker.housekeeping();
        self.report_worker();
        next
    }
}

fn faces_label(n: usize) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2 => "2",
        _ => "3+",
    }
}

/// Bounded label for a decision's confidence.
fn confidence_bucket(c: Option<f32>) -> &'static str {
    match c {
        None => "none",
        Some(c) if c < 0.5 => "0-0.5",
        Some(c) if c < 0.7 => "0.5-0.7",
        Some(c) if c < 0.9 => "0.7-0.9",
        Some(_) => "0.9-1",
    }
}
