//! The ring flow: an accepted press becomes a ring event with a monotonic sequence number,
//! goes through the recognition stages (capture → detect → embed → match, each timed), and
//! is stored durably before anything else hears of it.
//!
//! Runs on its own thread: recognition and the store flush both block.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::alerts::Input as AlertInput;
use crate::gpio::Press;
use crate::metrics::Metrics;
use crate::store::{RingResult, RingV1, StageMs, Store};

/// Accepted presses waiting for the pipeline; more are dropped as `busy`.
pub const QUEUE: usize = 4;

/// A recognition stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Grab frames from the camera.
    Capture,
    /// Find faces in the frames.
    Detect,
    /// Compute face embeddings.
    Embed,
    /// Compare embeddings with the gallery.
    Match,
}

impl Stage {
    /// Label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Detect => "detect",
            Stage::Embed => "embed",
            Stage::Match => "match",
        }
    }
}

/// Times each stage of one ring.
#[derive(Debug, Default)]
pub struct StageTimer {
    ms: StageMs,
}

impl StageTimer {
    /// Runs `f` as `stage`, adding its duration to the ring's timings.
    pub fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let ms = start.elapsed().as_secs_f32() * 1000.0;
        let slot = match stage {
            Stage::Capture => &mut self.ms.capture,
            Stage::Detect => &mut self.ms.detect,
            Stage::Embed => &mut self.ms.embed,
            Stage::Match => &mut self.ms.matching,
        };
        *slot += ms;
        out
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

/// The face recognition stages, behind one call per ring.
pub trait Recognizer: Send {
    /// Runs capture → detect → embed → match, timing each through `timer`.
    fn recognize(&mut self, timer: &mut StageTimer) -> Result<Decision, String>;
}

/// Stands in until the face pipeline lands: captures nothing, so every ring is `no_face`.
/// Each stage still runs through the timer so the metrics and payloads have their shape.
#[derive(Debug, Default)]
pub struct NoFace;

impl Recognizer for NoFace {
    fn recognize(&mut self, timer: &mut StageTimer) -> Result<Decision, String> {
        let frames: Vec<()> = timer.time(Stage::Capture, Vec::new);
        let faces: Vec<()> = timer.time(Stage::Detect, || frames.iter().map(|_| ()).collect());
        timer.time(Stage::Embed, || faces.len());
        timer.time(Stage::Match, || ());
        Ok(Decision {
            result: RingResult::NoFace,
            name: None,
            confidence: None,
        })
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
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Recognition stages.
    pub recognizer: Box<dyn Recognizer>,
    /// Alert engine input.
    pub alerts: mpsc::Sender<AlertInput>,
    /// Published ring counters.
    pub stats: watch::Sender<RingStats>,
}

impl RingFlow {
    /// Processes presses until the channel closes (the button task has stopped).
    pub fn run(mut self, mut presses: mpsc::Receiver<Press>) {
        let mut seq = self.store.last_ring_seq();
        while let Some(press) = presses.blocking_recv() {
            seq += 1;
            let ring = self.ring(press, seq);
            match self.store.put_ring(&ring) {
                Ok(()) => {
                    self.metrics.ring_latency.observe(&[], press.at.elapsed().as_secs_f64());
                    log::info!("ring {} stored: id={} result={} trigger={}", ring.seq, ring.id, ring.result.as_str(), ring.trigger);
                }
                Err(e) => {
                    self.metrics.errors.inc(&["store", "ring_write"]);
                    log::error!("ring {} could not be stored: {e}", ring.seq);
                }
            }
            self.metrics.rings.inc(&[&ring.trigger, crate::time::period_of_day(ring.ts_ms)]);
            self.metrics.ring_results.inc(&[ring.result.as_str()]);
            let _ = self.alerts.blocking_send(AlertInput::Ring(ring.result));
            self.stats.send_modify(|s| {
                s.rings += 1;
                s.last = Some(ring);
            });
        }
    }

    fn ring(&mut self, press: Press, seq: u64) -> RingV1 {
        let mut timer = StageTimer::default();
        let (decision, reason) = match self.recognizer.recognize(&mut timer) {
            Ok(d) => (d, None),
            Err(reason) => {
                self.metrics.errors.inc(&["pipeline", "recognize"]);
                let d = Decision {
                    result: RingResult::Error,
                    name: None,
                    confidence: None,
                };
                (d, Some(reason))
            }
        };
        let ms = timer.ms;
        for (stage, v) in [
            (Stage::Capture, ms.capture),
            (Stage::Detect, ms.detect),
            (Stage::Embed, ms.embed),
            (Stage::Match, ms.matching),
        ] {
            self.metrics.stage_seconds.observe(&[stage.as_str()], f64::from(v) / 1000.0);
        }
        RingV1 {
            id: uuid::Uuid::new_v4().simple().to_string(),
            seq,
            trigger: press.trigger.as_str().into(),
            result: decision.result,
            name: decision.name,
            confidence: decision.confidence,
            stage_ms: ms,
            reason,
            ts_ms: press.ts_ms,
        }
    }
}

/// JSON view of a ring event, as on the `events/ring` topic.
pub fn to_json(r: &RingV1) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "seq": r.seq,
        "trigger": r.trigger,
        "result": r.result.as_str(),
        "name": r.name,
        "confidence": r.confidence,
        "reason": r.reason,
        "stage_ms": {
            "capture": r.stage_ms.capture,
            "detect": r.stage_ms.detect,
            "embed": r.stage_ms.embed,
            "match": r.stage_ms.matching,
        },
        "ts": crate::time::rfc3339(r.ts_ms),
    })
}
