//! The ring flow: an accepted press becomes a ring event with a monotonic sequence number,
//! goes through the recognition stages (capture → decode → detect → align → embed → match,
//! each timed), and is stored durably before anything else hears of it.
//!
//! Runs on its own thread: recognition and the store flush both block. The same thread owns
//! the recognizer, so control requests (`control`: enroll, feedback, …) are served between
//! rings, and the recognizer's housekeeping (worker health, idle exit) runs when it is due.

pub mod control;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::alerts::Input as AlertInput;
use crate::config::Severity;
use crate::fleet::Announcer;
use crate::gpio::Press;
use crate::metrics::Metrics;
use crate::store::{RingResult, RingV1, StageMs, Store};
use control::{Control, ControlError};

/// Accepted presses waiting for the pipeline; more are dropped as `busy`.
pub const QUEUE: usize = 4;

/// A recognition stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Grab frames from the camera.
    Capture,
    /// Decode the JPEG frames.
    Decode,
    /// Find faces in the frames.
    Detect,
    /// Cut aligned face chips (and measure blur).
    Align,
    /// Compute face embeddings.
    Embed,
    /// Compare embeddings with the gallery.
    Match,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [Stage::Capture, Stage::Decode, Stage::Detect, Stage::Align, Stage::Embed, Stage::Match];

    /// Label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Decode => "decode",
            Stage::Detect => "detect",
            Stage::Align => "align",
            Stage::Embed => "embed",
            Stage::Match => "match",
        }
    }
}

/// Times each stage of one ring.
#[derive(Debug, Default)]
pub struct StageTimer {
    ms: [f32; 6],
}

impl StageTimer {
    /// Runs `f` as `stage`, adding its duration to the ring's timings.
    pub fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.add(stage, start.elapsed().as_secs_f32() * 1000.0);
        out
    }

    /// Adds `ms` measured elsewhere (by the worker) to `stage`.
    pub fn add(&mut self, stage: Stage, ms: f32) {
        self.ms[stage as usize] += ms;
    }

    /// Milliseconds spent in `stage`.
    pub fn ms(&self, stage: Stage) -> f32 {
        self.ms[stage as usize]
    }

    /// The ring event's four stage fields (fixed by the MQTT contract): decoding counts as
    /// capture, alignment as embedding.
    pub fn stage_ms(&self) -> StageMs {
        let ms = |s: Stage| self.ms(s);
        StageMs {
            capture: ms(Stage::Capture) + ms(Stage::Decode),
            detect: ms(Stage::Detect),
            embed: ms(Stage::Align) + ms(Stage::Embed),
            matching: ms(Stage::Match),
        }
    }
}

/// What recognition decided for one ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The result.
    pub result: RingResult,
    /// Name of the known or blocked person.
    pub name: Option<String>,
    /// Match confidence 0..1.
    pub confidence: Option<f32>,
}

/// The ring being recognized.
#[derive(Debug, Clone)]
pub struct RingCtx {
    /// Its sequence number.
    pub seq: u64,
    /// Its id (snapshots are filed under it).
    pub id: String,
}

/// The face recognition stages, behind one call per ring, plus the owner's other duties.
pub trait Recognizer: Send {
    /// Runs capture → … → match for one ring, timing each stage through `timer`.
    fn recognize(&mut self, ring: &RingCtx, timer: &mut StageTimer) -> Result<Decision, String>;
    /// Serves one control request.
    fn control(&mut self, request: Control);
    /// Periodic duties (worker health, idle exit); returns when it wants to run again.
    fn housekeeping(&mut self) -> Duration;
}

/// The recognizer of a binary built without the `faces` feature: it cannot see, so every
/// ring is `error` with that reason and every control request is refused.
#[derive(Debug, Default)]
pub struct NotBuiltIn;

/// Why `NotBuiltIn` refuses.
pub const NOT_BUILT_IN: &str = "face recognition is not built into this binary (cargo feature `faces` is off)";

impl Recognizer for NotBuiltIn {
    fn recognize(&mut self, _ring: &RingCtx, _timer: &mut StageTimer) -> Result<Decision, String> {
        Err(NOT_BUILT_IN.into())
    }

    fn control(&mut self, request: Control) {
        fn refuse<T>(reply: control::Reply<T>) {
            let _ = reply.send(Err(ControlError::Unavailable(NOT_BUILT_IN.into())));
        }
        match request {
            Control::Enroll { reply, .. } | Control::Remove { reply, .. } => refuse(reply),
            Control::List { reply } => refuse(reply),
            Control::Feedback { reply, .. } => refuse(reply),
            Control::Export { reply } => refuse(reply),
            Control::Import { reply, .. } => refuse(reply),
        }
    }

    fn housekeeping(&mut self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// Ring counters the rest of the agent reads (status line, /status).
#[derive(Debug, Clone, Default)]
pub struct RingStats {
    /// Rings stored since start.
    pub rings: u64,
    /// The newest ring.
    pub last: Option<RingV1>,
}

/// Owns the sequence counter and the recognizer; consumes accepted presses.
pub struct RingFlow {
    /// Durable store.
    pub store: Store,
    /// Queues the fleet messages of each ring with it (absent without a fleet link).
    pub announce: Option<Announcer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Recognition stages.
    pub recognizer: Box<dyn Recognizer>,
    /// Alert engine input.
    pub alerts: mpsc::Sender<AlertInput>,
    /// Published ring counters.
    pub stats: watch::Sender<RingStats>,
    /// Press to decision above this is slow (`pipeline_budget_ratio` > 1).
    pub budget: Duration,
}

enum Next {
    Press(Press),
    Control(Control),
    Housekeeping,
    Stop,
}

impl RingFlow {
    /// Processes presses until their channel closes (the button task has stopped), serving
    /// control requests and housekeeping in between. `runtime` drives the channel waits.
    pub fn run(mut self, runtime: tokio::runtime::Handle, mut presses: mpsc::Receiver<Press>, mut control: mpsc::Receiver<Control>) {
        let mut seq = self.store.last_ring_seq();
        let mut due = Instant::now();
        loop {
            self.metrics.pipeline_queue.set(&[], presses.len() as f64);
            let wait = due.saturating_duration_since(Instant::now());
            let next = runtime.block_on(async {
                tokio::select! {
                    biased;
                    p = presses.recv() => p.map_or(Next::Stop, Next::Press),
                    Some(c) = control.recv() => Next::Control(c),
                    _ = tokio::time::sleep(wait) => Next::Housekeeping,
                }
            });
            let press = match next {
                Next::Stop => return,
                Next::Control(c) => {
                    self.recognizer.control(c);
                    // Work changes what is due (idle timers, health): recompute soon.
                    due = Instant::now();
                    continue;
                }
                Next::Housekeeping => {
                    due = Instant::now() + self.recognizer.housekeeping();
                    continue;
                }
                Next::Press(p) => p,
            };
            due = Instant::now();
            seq += 1;
            let ring = self.ring(press, seq);
            let messages = self.announce.as_ref().map(|a| a.ring(&ring)).unwrap_or_default();
            let stored = match self.store.put_ring(&ring, &messages) {
                Ok(()) => {
                    let took = press.at.elapsed();
                    self.metrics.ring_latency.observe(&[], took.as_secs_f64());
                    Some(format!(
                        "ring {} stored: id={} result={} trigger={} in {:.1} ms",
                        ring.seq,
                        ring.id,
                        ring.result.as_str(),
                        ring.trigger,
                        took.as_secs_f64() * 1000.0
                    ))
                }
                Err(e) => {
                    self.metrics.errors.inc(&["store", "ring_write"]);
                    // The visitor is at the door now: tell the fleet even without the disk,
                    // and write the ring once the store can.
                    let unstored = self.announce.as_ref().map(|a| a.ring_unstored(&ring)).unwrap_or_default();
                    let announced = if unstored.is_empty() { "" } else { "; announced from memory (stored: false)" };
                    self.store.keep_ring(ring.clone(), messages, unstored);
                    log::error!("ring {} could not be stored: {e}{announced}; kept until the store writes again", ring.seq);
                    None
                }
            };
            self.metrics.rings.inc(&[&ring.trigger, doorbell_base::time::period_of_day(ring.ts_ms)]);
            self.metrics.ring_results.inc(&[ring.result.as_str()]);
            let result = ring.result;
            let blocked = (result == RingResult::Blocked).then(|| {
                let who = ring.name.as_deref().unwrap_or("?");
                let confidence = ring.confidence.map_or(String::new(), |c| format!(", confidence {c:.2}"));
                format!("blocked person {who} at the door (ring #{} {}{confidence})", ring.seq, ring.id)
            });
            // /status shows the ring before the log says it is stored, and before the alert
            // engine (which may be busy) hears of it: whoever follows the log sees it there.
            self.stats.send_modify(|s| {
                s.rings += 1;
                s.last = Some(ring);
            });
            if let Some(line) = stored {
                log::info!("{line}");
            }
            if let Some(message) = blocked {
                let _ = self.alerts.blocking_send(AlertInput::Event { key: "blocked_person", severity: Severity::Critical, message });
            }
            let _ = self.alerts.blocking_send(AlertInput::Ring(result));
            let decided = press.at.elapsed();
            let budget_ratio = decided.as_secs_f64() / self.budget.as_secs_f64();
            let _ = self.alerts.blocking_send(AlertInput::Readings(vec![("pipeline_budget_ratio", budget_ratio)]));
        }
    }

    fn ring(&mut self, press: Press, seq: u64) -> RingV1 {
        let mut timer = StageTimer::default();
        let ctx = RingCtx { seq, id: uuid::Uuid::new_v4().simple().to_string() };
        let (decision, reason) = match self.recognizer.recognize(&ctx, &mut timer) {
            Ok(d) => (d, None),
            Err(reason) => {
                self.metrics.errors.inc(&["pipeline", "recognize"]);
                let d = Decision { result: RingResult::Error, name: None, confidence: None };
                (d, Some(reason))
            }
        };
        for stage in Stage::ALL {
            self.metrics.stage_seconds.observe(&[stage.as_str()], f64::from(timer.ms(stage)) / 1000.0);
        }
        if let Some(reason) = &reason {
            log::warn!("ring {seq} failed: {reason}");
        }
        RingV1 {
            id: ctx.id,
            seq,
            trigger: press.trigger.as_str().into(),
            result: decision.result,
            name: decision.name,
            confidence: decision.confidence,
            stage_ms: timer.stage_ms(),
            reason,
            ts_ms: press.ts_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_faces_refuses_rings_and_requests_with_the_reason() {
        let mut r = NotBuiltIn;
        let ring = RingCtx { seq: 1, id: "r".into() };
        assert_eq!(r.recognize(&ring, &mut StageTimer::default()), Err(NOT_BUILT_IN.to_string()));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        r.control(Control::List { reply: tx });
        assert!(matches!(rx.try_recv(), Ok(Err(ControlError::Unavailable(reason))) if reason == NOT_BUILT_IN));
    }

    #[test]
    fn stage_ms_folds_decode_into_capture_and_align_into_embed() {
        let mut t = StageTimer::default();
        for (stage, ms) in [
            (Stage::Capture, 1.0),
            (Stage::Decode, 2.0),
            (Stage::Detect, 3.0),
            (Stage::Align, 4.0),
            (Stage::Embed, 5.0),
            (Stage::Match, 6.0),
        ] {
            t.add(stage, ms);
        }
        assert_eq!(t.stage_ms(), StageMs { capture: 3.0, detect: 3.0, embed: 9.0, matching: 6.0 });
    }
}
